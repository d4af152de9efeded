#!/usr/bin/env python
"""Runs django-olive's Django tests (django/tests) against the demo's
notes app: `python django/runtests.py [test labels]`. The AMQP tests need
RabbitMQ on 127.0.0.1:5672; without it they skip, except under CI=true,
where they fail."""

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE / "demo")]
os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"

if __name__ == "__main__":
    import django
    from django.conf import settings
    from django.test.utils import get_runner

    django.setup()
    runner = get_runner(settings)(verbosity=2)
    labels = sys.argv[1:] or ["tests"]
    failures = runner.run_tests(labels)
    sys.exit(1 if failures else 0)
