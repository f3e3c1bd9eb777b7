"""The local testbed: a real 2-node Kubernetes cluster on this machine (see README, "The local testbed").

Use it through `testbed.api.Testbed` from Python, or `python -m testbed` from a shell. Modules, each
importing only those above it (tests/test_testbed_imports.py keeps it so):

    paths, errors, net, proc, pki, configs, build, images, gpu_plugin   building blocks
    state          the state folder: certificates, kubeconfigs, node folders, version
    kube           kubectl, health endpoints, waiting on a condition
    node           one node's processes, files and images
    controlplane   certificates, etcd, API server, controller manager, scheduler, CoreDNS
    faults         break and heal parts, and the record of active faults
    health         status, as a typed tree
    startup        preflight and up
    teardown       down
    api            the Testbed class
"""
