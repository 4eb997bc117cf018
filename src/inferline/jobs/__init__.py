"""Durable jobs: the domain, the SQL store that is also the queue, and the worker runtime."""
