"""Static files as deployed: WhiteNoise's compressed storage under content-hashed names."""

from whitenoise.storage import CompressedManifestStaticFilesStorage  # type: ignore[import-untyped]


class StaticFilesStorage(CompressedManifestStaticFilesStorage):
    # The chat page is ES modules (static/chat/main.js imports ./api.js and the
    # rest): their imports are rewritten to the hashed names too, so that a
    # browser never runs a new main.js with an old module it has cached.
    support_js_module_import_aggregation = True
