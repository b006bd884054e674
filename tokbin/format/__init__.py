"""The tokbin data format: every file the pipeline writes and reads back, defined once.

One module per kind of file, each stating its layout in its docstring beside its writer and
reader:

    bins.py         <split>.bin: token ids, headerless (nanoGPT) or after llm.c's header;
                    shard directories <split>/000000.bin, ...
    meta.py         meta.json: what a reader needs to trust the bins beside it; the holdout
    documents.py    <split>.docs (binarize's document index), <split>.doclens (tokenize's)
    source_json.py  data/raw/source.json: what the download stage took and how to read it
    spec.py         the names and constants they share, and strict JSON parsing

Parsing is strict: a missing, unknown or ill-typed field is an error, so a reader never
guesses. Every file is written under a temporary name and renamed into place (tokbin.fsio).
Import names from here (``from tokbin.format import Meta``), not from the modules.
"""
from tokbin.format.bins import (CHUNK_TOKENS, BinWriter, bare_llmc_header, bin_header,
                                check_ids, choose_dtype, ids_crc32, is_shard_file, llmc_header,
                                llmc_max_tokens, open_bin, open_split, read_checked, read_chunks,
                                read_llmc_header, shard_file)
from tokbin.format.documents import (doclens_file, docs_crc_problem, docs_file, docs_problem,
                                     document_offsets, read_docs, recorded_crcs, token_ends)
from tokbin.format.meta import (HOLDOUT_BIN, HOLDOUT_FROM, TIKTOKEN_NAMED, Holdout, HubFile, Meta,
                                Source, SplitInfo, TokenizerRecord, meta_path, read_meta,
                                write_meta)
from tokbin.format.source_json import (READERS, SourceFile, SourceRecord, Stream, bin_splits,
                                       read_source, write_source)
from tokbin.format.spec import (BIN_FORMATS, DOCLENS_DTYPE, DOCS_DTYPE, DTYPES, EOT_POLICIES,
                                FORMAT_NAME, FORMAT_VERSION, INT32_MAX, LLMC_HEADER_BYTES,
                                LLMC_VARIANTS, META_FILENAME, RANK_FILE, READS_VERSIONS, REBUILD,
                                REPAIR, SENTENCEPIECE, SOURCE_FILENAME, TIKTOKEN, TOKENIZER_JSON,
                                TOKENIZER_KINDS)
