"""``ltx2-edge serve --ray``: the service's HTTP API in front of generation replicas on Ray Serve.

Layout, one job per module: ``app`` (the Serve application and ``serve run``'s builder), ``launch`` (the command),
``ingress`` (the single-box app and ``VideoService`` as the ingress deployment), ``dispatcher`` (queued jobs to
replicas, their events back, a dead replica's job re-queued), ``fleet`` (the replicas as the ingress calls them,
and the engine facade admission uses) with ``ray_fleet`` (those calls through a Serve handle), ``router`` (Serve's
request router) over ``routing`` (the pure routing rules), ``replica`` (the generation deployment) with
``replica_worker`` (its queue and batches) and ``replica_engine`` (what it reports), ``messages`` (what travels
between them), ``scale`` (replica counts), ``store_seam`` (the job store across processes and hosts).

Ray is an optional extra (``pip install 'ltx2-edge[ray]'``): importing this package imports nothing, and only
``app``, ``launch``, ``replica`` (in its methods) and ``router`` reach Ray; plain ``serve`` never does.
"""
