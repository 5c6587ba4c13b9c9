"""Conditional beam search: the prefix head, ConditionalBeam and hard constraints (the degeneracy
attributes they condition on are :mod:`steer.degeneracy`, which the judges use too)."""
