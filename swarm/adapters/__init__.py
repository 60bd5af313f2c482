"""Adapter distribution: files (a version's PEFT dir), delta (exact, compressed), bundle (wire
form), store (verified versions on disk), peers (whom to ask, with backoff), fetch."""
