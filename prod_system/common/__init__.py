"""Infrastructure every layer uses: the clocks, time helpers, atomic files, progress, fail points."""
