"""Storage: the one module that reads and writes features, matches, pairs and stamps (io), and the scene lock."""
