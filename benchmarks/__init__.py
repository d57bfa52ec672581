"""asv benchmark suite of slidebench (see asv.conf.json); plain scripts here are runnable too."""
