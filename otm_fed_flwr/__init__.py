"""What the server and the agents share on top of Flower: the record adapter of the wire protocol.

``otm_fed`` stays Flower-free; ``server`` and ``clients`` both import from here, never from each other.
"""
