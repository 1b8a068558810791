"""The address space: VMAs, their tree, and one module per syscall family."""
