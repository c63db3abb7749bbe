"""The worker process: the arq runner, jobs, the child pool, the child itself, the sweeper."""
