/* The victim of `vmsim demo sidechannel --victim lackey`: a table lookup indexed by key bits.
 *
 * Usage: sidechannel_victim KEY, KEY a string of '0' and '1' (at most MAX_BITS of them).
 * The table is 2 * MAX_BITS pages, page aligned. For key bit i the lookup loop reads the
 * first byte of page 2 * i + bit: one page per bit, and which one is the secret. Before the
 * loop the program writes every table page once (its table is initialised data) and prints
 * the table's address, so that a recording of its memory accesses can tell the table apart.
 * Nothing else in the loop depends on the key. */
#include <stdio.h>

#define MAX_BITS 64
#define PAGE 4096

static unsigned char table[2 * MAX_BITS][PAGE] __attribute__((aligned(PAGE)));

int main(int argc, char **argv)
{
    if (argc != 2)
        return 2;
    for (int p = 0; p < 2 * MAX_BITS; p++)
        table[p][0] = (unsigned char)p;
    printf("table %p\n", (void *)table);
    fflush(stdout);
    unsigned sum = 0;
    const char *key = argv[1];
    for (int i = 0; i < MAX_BITS && key[i]; i++)
        sum += *(volatile unsigned char *)&table[2 * i + (key[i] == '1')][0];
    return (int)(sum & 1);
}
