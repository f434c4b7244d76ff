from maskgit.models.attention import MultiHeadSelfAttention
from maskgit.models.discriminator import PatchDiscriminator
from maskgit.models.transformer import BidirectionalTransformer
from maskgit.models.vqgan import VQGAN

__all__ = ["VQGAN", "BidirectionalTransformer", "MultiHeadSelfAttention", "PatchDiscriminator"]
