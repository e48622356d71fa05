"""Small real datasets shipped with the repository, and the scripts that make them."""
