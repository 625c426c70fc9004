import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('conversations', '0002_turn_lease'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='WaitingConversation',
            fields=[
            ],
            options={
                'verbose_name': 'conversation waiting for a person',
                'verbose_name_plural': 'waiting for a person',
                'proxy': True,
                'indexes': [],
                'constraints': [],
            },
            bases=('conversations.conversation',),
        ),
        migrations.AlterModelOptions(
            name='conversation',
            options={'ordering': ['-last_activity_at'], 'permissions': [('reply_conversation', 'Can answer customers in a conversation')]},
        ),
        migrations.AddField(
            model_name='conversation',
            name='closed_at',
            field=models.DateTimeField(blank=True, help_text='When staff last closed it.', null=True),
        ),
        migrations.AddField(
            model_name='conversation',
            name='handoff',
            field=models.CharField(choices=[('assistant', 'the assistant answers'), ('waiting', 'waiting for a person'), ('staff', 'with a person')], default='assistant', max_length=16),
        ),
        migrations.AddField(
            model_name='conversation',
            name='notified_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='conversation',
            name='waiting_since',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='message',
            name='author',
            field=models.CharField(blank=True, default='', max_length=60),
        ),
        migrations.AddField(
            model_name='message',
            name='sent_by',
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL),
        ),
        migrations.AlterField(
            model_name='message',
            name='role',
            field=models.CharField(choices=[('user', 'User'), ('assistant', 'Assistant'), ('staff', 'Staff'), ('event', 'Event')], max_length=16),
        ),
        migrations.AddIndex(
            model_name='conversation',
            index=models.Index(condition=models.Q(('handoff', 'assistant'), _negated=True), fields=['waiting_since'], name='conversation_queue'),
        ),
    ]
