"""How the outside world calls the steps: the command line, Airflow's task glue, the embedded Airflow."""
