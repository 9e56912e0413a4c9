"""Teacher-knowledge cache: the teacher's outputs for a data set, stored once on disk and read back by students."""
