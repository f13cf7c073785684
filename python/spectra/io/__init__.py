"""I/O: the one atomic writer, and the identities and hashes that stamp results."""
