// Chart checks (make test-chart): the Kubernetes JSON-schema converter and
// the test scripts. A module of its own so that nothing here is part of
// github.com/messaging-hub/hubnode; standard library only.
module hubnode.local/ci/chart

go 1.26.0
