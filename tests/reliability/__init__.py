"""Reliability and security: fuzzed parsers, untrusted files, interrupted work, memory bounds."""
