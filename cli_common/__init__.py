"""What every command line of crewstream shares: console output, shared flags, early path checks
(`cli_common.console`) and the one failure path (`cli_common.failure`). Below beam_jobs and trainer,
above tfrecords_schema only."""
