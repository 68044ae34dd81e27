/* Global names an embedder may well use, which libmicrovm also uses
 * internally: linked with libmicrovm.a they must not clash. */
unsigned int crc32c(unsigned int crc, const void *data, unsigned long len);
int bus_register(void);
int vm_error(void);

unsigned int crc32c(unsigned int crc, const void *data, unsigned long len)
{
	(void)data;
	return crc + (unsigned int)len;
}

int bus_register(void)
{
	return 1;
}

int vm_error(void)
{
	return 2;
}
