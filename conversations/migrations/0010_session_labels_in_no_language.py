# Session.label kept a browser's name in English ("Firefox on Android", "A browser"); it now keeps
# only the browser and its system ("Firefox · Android", or "" when the browser is not known), and
# Session.name says them in the reader's language. Labels the old code wrote are rewritten.

import re

from django.db import migrations

OLD = re.compile(r"^(?P<browser>.+?)(?: on (?P<system>.+))?$")


def relabel(apps, schema_editor):
    Session = apps.get_model("conversations", "Session")
    for session in Session.objects.exclude(label="").only("pk", "label").iterator():
        found = OLD.match(session.label)
        browser, system = found["browser"], found["system"]
        label = "" if browser == "A browser" else " · ".join(part for part in (browser, system) if part)
        if label != session.label:
            Session.objects.filter(pk=session.pk).update(label=label)


class Migration(migrations.Migration):

    dependencies = [
        ("conversations", "0009_verbose_names"),
    ]

    operations = [
        migrations.RunPython(relabel, migrations.RunPython.noop),
    ]
