/** `muster` CLI: placeholder until the CLI lands. */
process.stdout.write('muster CLI: see README\n');
