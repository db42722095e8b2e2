"""What every flow needs to start and to talk to the person at the terminal.

settings   Prefect's settings (set before Prefect is imported) and its console's filters
server     Prefect's embedded API server, started early; which server is configured
console    digitflow's own stage lines and progress bars (stderr)
"""
