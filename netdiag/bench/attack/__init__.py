"""`netdiag bench attack`: one module per attack (base.py says what an attack is)."""
