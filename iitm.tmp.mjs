import 'import-in-the-middle';
