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

    os.chdir(HERE)  # "tests" is this directory, not the repository's Rust tests/
    django.setup()

    class Runner(get_runner(settings)):
        def build_suite(self, *args, **kwargs):
            suite = super().build_suite(*args, **kwargs)
            if suite.countTestCases() == 0:
                sys.exit("runtests.py: no tests found")
            return suite

    failures = Runner(verbosity=2).run_tests(sys.argv[1:] or ["tests"])
    sys.exit(1 if failures else 0)
