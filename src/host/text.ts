// Text read from users' files: a UTF-8 byte order mark (which some Windows editors write) is not part of the content.

/** `text` without a leading U+FEFF: JSON.parse rejects one, with an invisible character in its message. */
export function stripBom(text: string): string {
  return text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
}
