"""Discovery of raw sources: folders in, typed records (what files make up one case) out."""
