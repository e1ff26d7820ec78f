"""The domain: jobs and their rules, errors, and the ports the services need.

It imports nothing of the app but itself: no database, broker or web framework.
"""
