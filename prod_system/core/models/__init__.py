"""Built-in reference models (C1b, C3a) and the node functions they are made of."""
