"""Tiny random models of the reward architectures, built from configs and saved to tmp dirs."""

from __future__ import annotations

import torch

from scorealign.policy.sd import build_clip_tokenizer


def tiny_clip(tmp_path, name="clip", seed=0):
    """A CLIPModel (ViT 16px/8 patch, 2 layers) + byte-level CLIPTokenizer, saved to a dir."""
    import transformers

    tok = build_clip_tokenizer(max_length=16)
    text = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=16,
                bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id, hidden_act="gelu")
    vision = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                  num_attention_heads=4, image_size=16, patch_size=8, hidden_act="gelu")
    cfg = transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=12)
    torch.manual_seed(seed)
    model = transformers.CLIPModel(cfg).eval()
    d = tmp_path / name
    model.save_pretrained(d)
    tok.save_pretrained(d)
    return d, model, tok


WORDS = ["a", "cat", "dog", "red", "car", "photo", "of", "the", "tree", "hello"]


def tiny_bert_tokenizer(tmp_path):
    """A BertTokenizer over a few words (special tokens first), saved to a dir."""
    from transformers import BertTokenizer

    d = tmp_path / "bert"
    d.mkdir(exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS
    (d / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizer(str(d / "vocab.txt")).save_pretrained(d)
    return d, len(vocab)


TINY_IR = {"text": dict(vocab_size=17, hidden_size=32, encoder_hidden_size=24,
                        intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                        max_position_embeddings=40),
           "vision": dict(hidden_size=24, intermediate_size=30, num_hidden_layers=2,
                          num_attention_heads=4, image_size=16, patch_size=8)}


def tiny_llava(tmp_path, seed=0):
    """A LLaVA (tiny CLIP vision tower + tiny Llama) with a word-level tokenizer and a
    LlavaProcessor, saved to a dir."""
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = ["<unk>", "<pad>", "<s>", "</s>", "<image>", "yes", "no", "USER", "ASSISTANT", ":",
             "?", ".", '"', "Does", "this", "image", "show", "Answer", "or"] + WORDS
    vocab = {w: i for i, w in enumerate(words)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>",
                                               pad_token="<pad>", bos_token="<s>",
                                               eos_token="</s>")
    tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    image_proc = transformers.CLIPImageProcessor(size={"shortest_edge": 16},
                                                 crop_size={"height": 16, "width": 16})
    proc = transformers.LlavaProcessor(image_processor=image_proc, tokenizer=tok, patch_size=8,
                                       vision_feature_select_strategy="default",
                                       num_additional_image_tokens=1)
    cfg = transformers.LlavaConfig(
        vision_config=transformers.CLIPVisionConfig(hidden_size=16, intermediate_size=24,
                                                    num_hidden_layers=1, num_attention_heads=2,
                                                    image_size=16, patch_size=8),
        text_config=transformers.LlamaConfig(vocab_size=len(words), hidden_size=32,
                                             intermediate_size=48, num_hidden_layers=2,
                                             num_attention_heads=4, num_key_value_heads=4,
                                             max_position_embeddings=128,
                                             pad_token_id=vocab["<pad>"]),
        image_token_index=vocab["<image>"], vision_feature_select_strategy="default",
        vision_feature_layer=-1)
    torch.manual_seed(seed)
    model = transformers.LlavaForConditionalGeneration(cfg).eval()
    d = tmp_path / "llava"
    model.save_pretrained(d)
    proc.save_pretrained(d)
    return d, model, vocab
