"""The worker's Celery app, for Celery's own command line: ``celery -A app.workers.celery_main``.

``celery_manager.py`` builds the same app itself; nothing else imports this module.
"""

from app.workers.celery_worker import celery_worker_app

app = celery_worker_app()
