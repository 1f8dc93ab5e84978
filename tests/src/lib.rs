//! wharf-tests: the shared integration-test harness (registry, image fixtures, wharfd, ctr).
