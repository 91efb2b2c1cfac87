"""Corpora, vocabularies and tokenizers, and the community task."""

from sharp.data.bundled import load_books, load_wiki, provenance, stored_text
from sharp.data.community import CommunityTask
from sharp.data.corpus import Book, Corpus, corpus_splits, load_corpus, tokens_sha256
from sharp.data.normalize import fold_unicode, normalize_text8, normalize_text8_stream, wikifil
from sharp.data.pg19 import load_pg19, pg19_splits
from sharp.data.text8 import load_text8
from sharp.data.tokenizer import TextTokenizer, load_tokenizer
from sharp.data.vocab import TEXT8, Vocabulary, char_vocabulary

__all__ = [
    "TEXT8",
    "Book",
    "CommunityTask",
    "Corpus",
    "TextTokenizer",
    "Vocabulary",
    "char_vocabulary",
    "corpus_splits",
    "fold_unicode",
    "load_books",
    "load_corpus",
    "load_pg19",
    "load_text8",
    "load_tokenizer",
    "load_wiki",
    "normalize_text8",
    "normalize_text8_stream",
    "pg19_splits",
    "provenance",
    "stored_text",
    "tokens_sha256",
    "wikifil",
]
