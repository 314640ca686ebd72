"""Helpers that start real throwaway services for the tests (no mocks)."""
