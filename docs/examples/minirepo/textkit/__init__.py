"""textkit: a small example repository for `codepeft mine` (see docs/data.md, "Bring your own data")."""
