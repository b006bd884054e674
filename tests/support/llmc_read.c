/* A reader of llm.c's token files written from the layout llm.c's dev/data/data_common.py
 * documents (not from tokbin's code, nor llm.c's): 256 little-endian int32 header words
 * (magic, version, token count, then zeros), then the tokens: uint16 (magic 20240520,
 * version 1) or uint32 (magic 20240801, version 7). tests/test_llmc.py compiles and runs it.
 *
 *   cc -O2 -o llmc_read llmc_read.c && ./llmc_read 'dir/*.bin'
 *
 * For every shard matched by the glob pattern (in glob's sorted order, as llm.c's loader uses
 * it) prints: name, dtype, token count, sum of ids (mod 2**64), first and last id. Exits 1 on
 * any header/size mismatch. Assumes a little-endian host (as llm.c does).
 */
#include <glob.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int read_shard(const char *name) {
    FILE *f = fopen(name, "rb");
    if (!f) { fprintf(stderr, "%s: cannot open\n", name); return 1; }
    int32_t h[256];
    if (fread(h, sizeof(int32_t), 256, f) != 256) {
        fprintf(stderr, "%s: short header\n", name); fclose(f); return 1;
    }
    size_t item;
    if (h[0] == 20240520 && h[1] == 1) item = 2;
    else if (h[0] == 20240801 && h[1] == 7) item = 4;
    else { fprintf(stderr, "%s: bad magic/version %d/%d\n", name, h[0], h[1]); fclose(f); return 1; }
    for (int i = 3; i < 256; i++)
        if (h[i] != 0) { fprintf(stderr, "%s: header word %d not zero\n", name, i); fclose(f); return 1; }
    if (h[2] < 0) { fprintf(stderr, "%s: negative count\n", name); fclose(f); return 1; }
    struct stat st;
    if (stat(name, &st) != 0) { fclose(f); return 1; }
    int64_t count = h[2];
    if ((int64_t)st.st_size != 1024 + count * (int64_t)item) {
        fprintf(stderr, "%s: size %lld != 1024 + %lld * %zu\n", name, (long long)st.st_size,
                (long long)count, item);
        fclose(f); return 1;
    }
    uint64_t sum = 0, first = 0, last = 0;
    unsigned char buf[1 << 16];
    int64_t seen = 0;
    size_t got;
    while ((got = fread(buf, item, sizeof(buf) / item, f)) > 0) {
        for (size_t i = 0; i < got; i++) {
            uint64_t v = item == 2 ? (uint64_t)(buf[2 * i] | (buf[2 * i + 1] << 8))
                                   : (uint64_t)buf[4 * i] | ((uint64_t)buf[4 * i + 1] << 8) |
                                     ((uint64_t)buf[4 * i + 2] << 16) | ((uint64_t)buf[4 * i + 3] << 24);
            if (seen == 0) first = v;
            last = v;
            sum += v;
            seen++;
        }
    }
    fclose(f);
    if (seen != count) { fprintf(stderr, "%s: read %lld tokens, header says %lld\n", name,
                                 (long long)seen, (long long)count); return 1; }
    printf("%s %s %lld %llu %llu %llu\n", name, item == 2 ? "uint16" : "uint32", (long long)count,
           (unsigned long long)sum, (unsigned long long)first, (unsigned long long)last);
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: %s 'pattern/*.bin'\n", argv[0]); return 2; }
    glob_t g;
    if (glob(argv[1], 0, NULL, &g) != 0 || g.gl_pathc == 0) {
        fprintf(stderr, "no files match %s\n", argv[1]); return 1;
    }
    int bad = 0;
    for (size_t i = 0; i < g.gl_pathc; i++) bad |= read_shard(g.gl_pathv[i]);
    globfree(&g);
    return bad;
}
