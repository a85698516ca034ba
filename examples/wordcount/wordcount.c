// wordcount: counts the bytes, lines and words of the event and names the most frequent word.
//
//   event  the quick brown fox jumps over the lazy dog
//   result {"bytes":44,"lines":1,"words":9,"top_word":"the","top_count":2}
//
// A WASI command: the event arrives on stdin, the result goes to stdout, stderr is the log.
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_WORDS 4096
#define MAX_WORD 64

struct entry { char word[MAX_WORD]; int count; };
static struct entry table[MAX_WORDS];
static int distinct;

static void count_word(const char *w) {
    for (int i = 0; i < distinct; i++) {
        if (strcmp(table[i].word, w) == 0) { table[i].count++; return; }
    }
    if (distinct < MAX_WORDS) {
        strncpy(table[distinct].word, w, MAX_WORD - 1);
        table[distinct++].count = 1;
    }
}

int main(void) {
    long bytes = 0, lines = 0, words = 0;
    char word[MAX_WORD];
    int wlen = 0, c;
    while ((c = getchar()) != EOF) {
        bytes++;
        if (c == '\n') lines++;
        if (isalnum(c) || c == '\'') {
            if (wlen < MAX_WORD - 1) word[wlen++] = (char)tolower(c);
        } else if (wlen > 0) {
            word[wlen] = 0; count_word(word); words++; wlen = 0;
        }
    }
    if (wlen > 0) { word[wlen] = 0; count_word(word); words++; }
    if (bytes > 0 && lines == 0) lines = 1;
    int top = -1;
    for (int i = 0; i < distinct; i++) if (top < 0 || table[i].count > table[top].count) top = i;
    fprintf(stderr, "wordcount: %ld words, %d distinct\n", words, distinct);
    printf("{\"bytes\":%ld,\"lines\":%ld,\"words\":%ld,\"top_word\":\"%s\",\"top_count\":%d}",
           bytes, lines, words, top >= 0 ? table[top].word : "", top >= 0 ? table[top].count : 0);
    return 0;
}
