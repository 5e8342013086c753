"""`make bench`: figures beside anchors measured in the same command. Not tests."""
