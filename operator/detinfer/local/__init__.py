"""Running detinfer on one machine: what `make demo` and the e2e tests run beside the local
cluster (hack/cluster-up.sh). The operator itself never imports this package."""
