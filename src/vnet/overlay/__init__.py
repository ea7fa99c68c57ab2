"""flannel's subnet-per-host overlay network, sans-IO: the network config, leases as
flannel keeps them in etcd, subnet allocation, subnet.env, and what each backend makes of
a lease."""
