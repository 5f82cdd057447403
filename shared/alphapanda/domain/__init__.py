"""Pure domain logic: strategies, risk rules, fill models, charges, positions. No I/O here."""
