// hello: greets the "name" field of a JSON event.
//
//   event  {"name": "Ada"}      result  {"message":"Hello, Ada!","runtime":"gust wasm"}
//
// A WASI command: the event arrives on stdin, the result goes to stdout, stderr is the log.
// A missing name is a function error (exit code 1) with the reason in the log.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char event[1 << 20];

// Finds "key" in a flat JSON object and copies its string value into out.
static int json_string_field(const char *json, const char *key, char *out, size_t cap) {
    char pattern[64];
    snprintf(pattern, sizeof pattern, "\"%s\"", key);
    const char *p = strstr(json, pattern);
    if (!p) return 0;
    p = strchr(p + strlen(pattern), ':');
    if (!p) return 0;
    while (*++p == ' ' || *p == '\t' || *p == '\n') {}
    if (*p != '"') return 0;
    size_t n = 0;
    for (p++; *p && *p != '"' && n + 1 < cap; p++) {
        if (*p == '\\' && p[1]) p++;
        out[n++] = *p;
    }
    out[n] = 0;
    return *p == '"';
}

int main(void) {
    size_t len = fread(event, 1, sizeof event - 1, stdin);
    event[len] = 0;
    char name[256];
    if (!json_string_field(event, "name", name, sizeof name)) {
        fprintf(stderr, "hello: the event has no \"name\" string field\n");
        return 1;
    }
    const char *greeting = getenv("GREETING");
    if (!greeting) greeting = "Hello";
    fprintf(stderr, "hello: greeting %s\n", name);
    printf("{\"message\":\"%s, %s!\",\"runtime\":\"gust wasm\"}", greeting, name);
    return 0;
}
