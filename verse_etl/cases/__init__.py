"""What any case needs: its result (rows per table, quarantine records), the seal that keeps
whatever it throws inside it, its cache key (hashing, stat cache) and its saved result on disk."""
