"""Conditional beam search: degeneracy attributes, the prefix head, ConditionalBeam and hard constraints."""
