/* tiny.c: the program the spawn benchmark starts with posix_spawn and
 * tfork_exec: it exits 0 at once.  Linked -static (see the Makefile), so
 * an exec of it costs the kernel's part only: no dynamic loader, no
 * shared libraries to map. */
int main(void)
{
    return 0;
}
