"""The console's users: accounts, roles, password hashes, second factors, lockout.

Below the configuration (its ``console:`` section is declared here) and above the store; the
web console (:mod:`engine.console`) and ``crosswalk users`` are the two parts that use it.
"""
