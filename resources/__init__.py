from resources.models import CrossEncoderResource, EmbedderResource
from resources.store import LanceStoreResource

__all__ = ["CrossEncoderResource", "EmbedderResource", "LanceStoreResource"]
