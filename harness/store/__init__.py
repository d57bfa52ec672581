"""What a run leaves behind: the record's schema and flags, the results folder, atomic writes."""
