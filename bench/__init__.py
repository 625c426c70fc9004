"""The benchmark harness: the chat turn measured against bare Django. Run it with `make bench`."""
