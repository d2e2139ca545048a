"""MANO hand model: real MANO files or a generated stand-in, through smplx."""
