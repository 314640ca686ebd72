"""The scheduler: selectors, pure placement, the transactional apply step and the service loop."""
